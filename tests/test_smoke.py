import asyncio


async def test_sleep_and_gather(loop_name):
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    assert await asyncio.gather(*(double(i) for i in range(5))) == [0, 2, 4, 6, 8]


def test_run_until_complete(new_loop):
    loop = new_loop()

    async def answer():
        return 42

    assert loop.run_until_complete(answer()) == 42
