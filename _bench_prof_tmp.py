import cProfile, pstats, sys, asyncio
import bench.causal_bench as cb

def worker(index, cfg, seconds, clients, barrier, accepted, results):
    pr = cProfile.Profile()
    pr.enable()
    try:
        results.put(asyncio.run(cb._worker(index, cfg, seconds, clients, barrier, accepted)))
    finally:
        pr.disable()
        pr.dump_stats(f"/tmp/cz/prof{index}.out")

if __name__ == "__main__":
    cb.worker = worker
    res = cb.run(8, 600)
    print(res["events_per_s"], res["deliveries_per_s_total"])
