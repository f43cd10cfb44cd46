"""The asyncio flavour: the same engine, awaitables, cancellation."""

import asyncio

import pytest

import locker


def run(coro):
    return asyncio.run(coro)


async def queue_len(client, name):
    h = await client.holders(name)
    return len(h.holders) + len(h.waiters)


async def wait_queue(client, name, n, timeout=10.0):
    async def poll():
        while await queue_len(client, name) != n:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


def test_async_with_holds_and_releases(endpoints, name):
    async def main():
        client = await locker.AsyncClient.connect(endpoints)
        async with client.lock(name, ttl=5) as g:
            assert isinstance(g, locker.AsyncGuard)
            assert (await client.holder(name)).key == g.key
            assert await g.put(name + "-data", "x") > g.fencing_token
        assert await client.holder(name) is None
        g = await client.lock(name)
        await g.release()
        assert g.is_lost
    run(main())


def test_cancelling_a_waiting_task_leaves_nothing_queued(endpoints, name):
    async def main():
        client = locker.AsyncClient(endpoints)
        holder = await client.lock(name)
        task = asyncio.ensure_future(client.lock(name))
        await wait_queue(client, name, 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_queue(client, name, 1)
        await holder.release()
        assert await client.holder(name) is None
    run(main())


def test_a_timeout_by_wait_for_leaves_nothing_queued(endpoints, name):
    async def main():
        client = locker.AsyncClient(endpoints)
        async with client.lock(name):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.lock(name), 0.3)
            await wait_queue(client, name, 1)
    run(main())


def test_a_thousand_waiting_tasks_in_one_process(endpoints, name):
    n = 1000

    async def main():
        client = locker.AsyncClient(endpoints, request_timeout=20)
        holder = await client.lock(name)
        got = []

        async def one(i):
            g = await client.lock(name, ttl=30)
            got.append(g.fencing_token)
            await g.release()

        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        await wait_queue(client, name, n + 1, timeout=120)
        await holder.release()
        await asyncio.wait_for(asyncio.gather(*tasks), 240)
        assert len(got) == n
        assert got == sorted(got)  # served in queue order
        assert await client.holder(name) is None
    run(main())


def test_lost_can_be_awaited(endpoints, name):
    async def main():
        client = locker.AsyncClient(endpoints)
        g = await client.lock(name, ttl=3)
        assert await g.lost(timeout=0.1) is None
        waiter = asyncio.ensure_future(g.lost())
        await client.lease_revoke(g.lease)
        assert await asyncio.wait_for(waiter, 5) in ("expired", "key_deleted")
        with pytest.raises(locker.LostError):
            await g.release()
    run(main())


def test_async_sessions_elections_and_watches(endpoints, name):
    async def main():
        client = locker.AsyncClient(endpoints)
        async with client.session(5) as s:
            assert isinstance(s, locker.AsyncSession)
            async with s.lock(name + "-a") as a:
                assert a.lease == s.lease
            sem = s.semaphore(name + "-sem", 2)
            p = await sem.acquire()
            await p.release()
        events = []
        watch = await client.observe(name)

        async def follow():
            async for e in watch:
                events.append(e.kind)
                if len(events) == 3:
                    return
        follower = asyncio.ensure_future(follow())
        async with client.campaign(name, "a") as leader:
            assert isinstance(leader, locker.AsyncLeadership)
            await leader.proclaim("b")
        await asyncio.wait_for(follower, 10)
        assert events == ["no_leader", "leader", "proclaimed"]
        watch.close()
    run(main())


def test_async_errors_are_typed(endpoints, name):
    async def main():
        client = locker.AsyncClient(endpoints)
        with pytest.raises(locker.InvalidArgument):
            await client.lock("")
        async with client.lock(name):
            with pytest.raises(locker.LockHeld):
                await client.try_lock(name)
            with pytest.raises(locker.AcquireTimeout):
                await client.lock(name, timeout=0.2)
        with pytest.raises(locker.Unreachable):
            await locker.AsyncClient.connect(["http://127.0.0.1:1"], connect_timeout=0.5)
    run(main())


def test_closing_a_watch_ends_a_pending_next(endpoints, name):
    async def main():
        client = locker.AsyncClient(endpoints)
        w = await client.watch_lock(name)
        assert (await w.__anext__()).kind == "snapshot"
        pending = asyncio.ensure_future(w.__anext__())
        await asyncio.sleep(0.2)
        w.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 5)
    run(main())
