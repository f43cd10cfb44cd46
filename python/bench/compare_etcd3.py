"""locker (this binding) against python-etcd3 0.12 on one etcd, in one run:

1. FIFO: the order in which 8 contenders, queued one after another while the
   lock is held, get it.
2. A lock held past its TTL: the holder works for twice the TTL; does a
   second client get in meanwhile, and is the holder told?
3. Contended throughput: 4 threads lock and unlock one name for a few
   seconds.

Run by scripts/bench-python (a throwaway venv with both installed, and an
etcd of its own); prints one line per figure.
"""

import sys
import threading
import time

import etcd3

import locker

CONTENDERS = 8
TTL = 2
THREADS = 4
SECONDS = 5


def fifo_locker(endpoints, name):
    client = locker.Client(endpoints)
    first = client.lock(name)
    order = []

    def contender(i):
        with client.lock(name):
            order.append(i)
            time.sleep(0.02)

    threads = []
    for i in range(CONTENDERS):
        t = threading.Thread(target=contender, args=(i,))
        t.start()
        threads.append(t)
        while len(client.holders(name).waiters) < i + 1:
            time.sleep(0.01)
    first.release()
    for t in threads:
        t.join()
    return order


def fifo_etcd3(host, port, name):
    client = etcd3.client(host=host, port=port)
    first = client.lock(name, ttl=30)
    first.acquire()
    order = []

    def contender(i):
        c = etcd3.client(host=host, port=port)
        lock = c.lock(name, ttl=30)
        lock.acquire(timeout=60)
        order.append(i)
        time.sleep(0.02)
        lock.release()

    threads = []
    for i in range(CONTENDERS):
        t = threading.Thread(target=contender, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.3)  # python-etcd3 has no queue to watch: give each time to wait
    first.release()
    for t in threads:
        t.join()
    return order


def past_ttl_locker(endpoints, name):
    client = locker.Client(endpoints)
    other = locker.Client(endpoints)
    g = client.lock(name, ttl=TTL)
    time.sleep(2 * TTL)  # the work, longer than the TTL
    try:
        other.try_lock(name).release()
        second_got_in = True
    except locker.LockHeld:
        second_got_in = False
    held = not g.is_lost
    g.release()
    return second_got_in, held


def past_ttl_etcd3(host, port, name):
    client = etcd3.client(host=host, port=port)
    other = etcd3.client(host=host, port=port)
    lock = client.lock(name, ttl=TTL)
    lock.acquire()
    time.sleep(2 * TTL)
    second = other.lock(name, ttl=TTL)
    second_got_in = second.acquire(timeout=0)
    # python-etcd3 has no lost signal: the holder learns only if it asks.
    signalled = False
    if second_got_in:
        second.release()
    return second_got_in, signalled


def throughput(make_lock):
    count = [0] * THREADS
    stop = time.monotonic() + SECONDS

    def worker(i):
        acquire, release = make_lock()
        while time.monotonic() < stop:
            h = acquire()
            release(h)
            count[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / SECONDS


def main(endpoint):
    host, port = endpoint.removeprefix("http://").split(":")
    endpoints = [endpoint]
    print(f"python-etcd3 {etcd3.__version__}, locker-etcd, etcd at {endpoint}")

    order = fifo_locker(endpoints, "bench/fifo-locker")
    print(f"fifo locker:       order {order}, in queue order: {order == sorted(order)}")
    order = fifo_etcd3(host, int(port), "bench/fifo-etcd3")
    print(f"fifo python-etcd3: order {order}, in queue order: {order == sorted(order)}")

    got_in, held = past_ttl_locker(endpoints, "bench/ttl-locker")
    print(f"past ttl locker:       worked {2 * TTL}s with ttl {TTL}s: second client got in: {got_in}; still held: {held}")
    got_in, signalled = past_ttl_etcd3(host, int(port), "bench/ttl-etcd3")
    print(
        f"past ttl python-etcd3: worked {2 * TTL}s with ttl {TTL}s: second client got in: {got_in}; "
        f"holder signalled: {signalled}"
    )

    def locker_lock():
        c = locker.Client(endpoints)
        return (lambda: c.lock("bench/tp-locker", ttl=10)), (lambda g: g.release())

    def etcd3_lock():
        c = etcd3.client(host=host, port=int(port))

        def acquire():
            lock = c.lock("bench/tp-etcd3", ttl=10)
            lock.acquire(timeout=60)
            return lock

        return acquire, (lambda lock: lock.release())

    print(f"throughput locker:       {throughput(locker_lock):.0f} lock+unlock/s ({THREADS} threads, one name)")
    print(f"throughput python-etcd3: {throughput(etcd3_lock):.0f} lock+unlock/s ({THREADS} threads, one name)")


if __name__ == "__main__":
    main(sys.argv[1])
