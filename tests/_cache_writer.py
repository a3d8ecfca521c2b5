"""A process that opens the response cache the moment the others do, then writes 50 answers."""

from cognitionos_kit.storage.cache import ResponseCache


def write(home: str, name: str, barrier) -> None:
    barrier.wait()
    cache = ResponseCache(home)
    for j in range(50):
        cache.put(f"{name}-{j}", {"content": f"{name} answer {j}"})
