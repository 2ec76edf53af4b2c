"""A tiny stand-in for the job's worker, for a recorded py-spy sample: request parsing
(streaming.events -> json), a URI parse (streaming.uris), JSON in a thread pool, a busy thread."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from streaming import events


def parse_many(n):
    raw = json.dumps({"id": "r1", "uri": "s3://bucket/some/key.jpg"}).encode()
    for _ in range(n):
        events.parse_request(raw)


def encode(n):
    return json.dumps([{"i": i, "s": str(i)} for i in range(n)])


def spin(seconds):
    end = time.time() + seconds
    while time.time() < end:
        sum(i * i for i in range(2000))


def main():
    with ThreadPoolExecutor(2) as pool:
        busy = threading.Thread(target=spin, args=(3.0,))
        busy.start()
        end = time.time() + 3.0
        while time.time() < end:
            parse_many(200)
            pool.submit(encode, 300).result()
        busy.join()


if __name__ == "__main__":
    main()
