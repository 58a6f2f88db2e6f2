"""World geometry: 2 km region cubes, Morton keys, batch mapping and a 3-D R-tree index.

Depends on nothing else in worldstate. Bad input raises `regions.GeometryError` (a
`ValueError`), which `worldstate` surfaces as `worldstate.ValidationError`.
"""

from regions.errors import GeometryError
from regions.keys import (
    DEFAULT_BOUNDS,
    DEFAULT_MAX_KEYS,
    REGION_SIZE,
    RegionKey,
    WorldBounds,
    as_region_key,
    keys_in_box,
    keys_in_sphere,
    keys_of_shape,
    region_indices,
    region_keys,
    region_of,
)
from regions.shapes import Box, Shape, Sphere, Vec3, as_shape, as_vec3
from regions.spatial_index import SpatialIndex, check_bbox, check_bbox_arrays

__all__ = [
    "DEFAULT_BOUNDS",
    "DEFAULT_MAX_KEYS",
    "REGION_SIZE",
    "Box",
    "GeometryError",
    "RegionKey",
    "Shape",
    "SpatialIndex",
    "Sphere",
    "Vec3",
    "WorldBounds",
    "as_region_key",
    "as_shape",
    "as_vec3",
    "check_bbox",
    "check_bbox_arrays",
    "keys_in_box",
    "keys_in_sphere",
    "keys_of_shape",
    "region_indices",
    "region_keys",
    "region_of",
]
