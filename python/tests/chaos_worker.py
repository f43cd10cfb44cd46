"""A chaos worker: until its deadline, takes the lock, increments a counter
in etcd with a write guarded by the lock, and reports each step on stdout
with CLOCK_MONOTONIC times (shared by the processes of one machine):

    enter TOKEN T   (the lock is held from T)
    try TOKEN       (the guarded write is about to be sent)
    ok TOKEN        (it was applied)
    exit TOKEN T    (released at T)
"""

import sys
import time

import locker


def main(endpoints, name, counter, seconds):
    client = locker.Client(endpoints.split(","), request_timeout=2, connect_timeout=1)
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        try:
            with client.lock(name, ttl=2, timeout=5) as g:
                print(f"enter {g.fencing_token} {time.monotonic()}", flush=True)
                value = int(client.get(counter) or b"0")
                time.sleep(0.01)
                print(f"try {g.fencing_token}", flush=True)
                g.put(counter, str(value + 1))
                print(f"ok {g.fencing_token}", flush=True)
                # Stop acting before the lease could be gone.
                if g.is_lost:
                    raise locker.LeaseExpired("lost")
                print(f"exit {g.fencing_token} {time.monotonic()}", flush=True)
        except locker.LockerError as e:
            print(f"error {type(e).__name__}", flush=True)
            time.sleep(0.1)


if __name__ == "__main__":
    main(*sys.argv[1:])
