"""Python workloads with known call trees, for emberprof's Python frame tests (tests/it/python.rs).

    python3 workload.py MODE CPU_SECONDS

Every mode burns CPU in pure Python loops (the same loop everywhere, so shares of CPU time do not
depend on the interpreter's speed) until the process has used CPU_SECONDS of CPU time (its own
clock, so a busy machine gives it as many samples as a quiet one):
- calltree:  75 % in outer > middle > inner, 25 % in outer > sort_py > sorted (builtin) > key_py
- threads:   two threads, one in thread_a > spin_a, one in thread_b > spin_b (the main thread waits)
- generator: a generator (produce) consumed by consume
- coroutine: an async coroutine (compute) awaited by main_async under asyncio
- recursion: recurse calls itself 300 deep, then spins in bottom
- deep50:    as recursion, 50 Python frames deep in all (the walker's cost per sample, README)
- sleepy:    sleeps for a second (a process that has run for a while), then as calltree
- reused:    call_alpha > alpha and call_beta > beta in turns, each alpha and beta a new function
             (a new code object, freed when it returns): beta's code object often takes the
             address of the alpha before it, after alpha's samples were taken and before they were
             named, so a profiler that names frames from the address alone shows call_alpha > beta
Prints nothing.
"""

import sys
import time


def spin(n):
    # Past the small ints CPython caches: every iteration costs the same, however short the loop.
    s = 0
    for i in range(1000, 1000 + n):
        s += i
    return s


def inner():
    return spin(1000)


def middle():
    return inner()


def key_py(x):
    spin(100)
    return -x


def sort_py():
    # 10 calls of key_py: as much looping as one inner(); outer runs three of those per sort.
    return sorted(range(10), key=key_py)


def outer(end):
    while time.process_time() < end:
        middle()
        middle()
        middle()
        sort_py()


def spin_a(end):
    while time.process_time() < end:
        spin(1000)


def spin_b(end):
    while time.process_time() < end:
        spin(1000)


def thread_a(end):
    spin_a(end)


def thread_b(end):
    spin_b(end)


def threads(end):
    import threading

    workers = [
        threading.Thread(target=thread_a, args=(end,), name="worker-a"),
        threading.Thread(target=thread_b, args=(end,), name="worker-b"),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def produce(end):
    while time.process_time() < end:
        yield spin(1000)


def consume(end):
    total = 0
    for value in produce(end):
        total += value
    return total


async def compute(n):
    return spin(n)


async def main_async(end):
    while time.process_time() < end:
        await compute(1000)


def coroutine(end):
    import asyncio

    asyncio.run(main_async(end))


def bottom(end):
    while time.process_time() < end:
        spin(1000)


def recurse(depth, end):
    if depth == 0:
        return bottom(end)
    return recurse(depth - 1, end)


FRESH = """
def {name}(end):
    while time.process_time() < end:
        spin(100)
"""


def fresh(name):
    """A new function `name`, compiled now: a code object of its own, freed with the function."""
    namespace = {"time": time, "spin": spin}
    exec(compile(FRESH.format(name=name), "<fresh>", "exec"), namespace)
    # The namespace is the function's globals: left in it, the function would be freed only by
    # the cycle collector, not when its caller returns.
    return namespace.pop(name)


def call_alpha(seconds):
    fresh("alpha")(time.process_time() + seconds)


def call_beta(seconds):
    fresh("beta")(time.process_time() + seconds)


def reused(end):
    while time.process_time() < end:
        call_alpha(0.004)
        call_beta(0.016)


def main():
    mode, seconds = sys.argv[1], float(sys.argv[2])
    end = time.process_time() + seconds
    if mode == "calltree":
        outer(end)
    elif mode == "threads":
        threads(end)
    elif mode == "generator":
        consume(end)
    elif mode == "coroutine":
        coroutine(end)
    elif mode == "recursion":
        sys.setrecursionlimit(10000)
        recurse(300, end)
    elif mode == "deep50":
        # <module>, main, 47 x recurse, bottom, spin.
        recurse(46, end)
    elif mode == "reused":
        reused(end)
    elif mode == "sleepy":
        time.sleep(1)
        outer(end)
    else:
        raise SystemExit(f"unknown mode {mode}")


main()
