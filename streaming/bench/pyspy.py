"""py-spy's samples of the job's Python worker, grouped into the pipeline's stages.

py-spy (`record --format raw`) writes collapsed stacks, one line per distinct stack, root first:
``<module> (a.py:3);main (a.py:9);f (b/c.py:12) 42``. A stack goes to the stage of its
innermost frame whose file a rule names: first the specific rules (our modules, tritonclient,
PyFlink/Beam, urllib3), then, if none of those is on the stack, the generic ones (grpc, json,
asyncio and the thread machinery), else "other". So `json.loads` under `streaming/events.py`
is serialisation, grpc under tritonclient is gRPC to Triton, and grpc under Beam is the bridge.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

STAGES = ("fetch", "decode hand-off", "batching", "gRPC", "bridge/serialisation", "event loop/threads",
          "metrics", "other")
SPECIFIC = (  # (stage, substrings of a frame's file): the innermost match decides
    ("fetch", ("streaming/fetch.py", "streaming/s3_get.py", "streaming/http_fetch.py", "streaming/transport.py",
               "streaming/deadline.py", "streaming/uris.py", "urllib3/")),
    ("decode hand-off", ("streaming/decoder_pool.py", "streaming/prepare.py", "streaming/decode.py",
                         "streaming/cache.py", "streaming/jpeg_markers.py")),
    ("batching", ("streaming/batcher.py",)),
    ("gRPC", ("streaming/infer.py", "tritonclient/")),
    ("bridge/serialisation", ("streaming/events.py", "pyflink/", "apache_beam/", "google/protobuf/", "cloudpickle/")),
    ("metrics", ("streaming/metrics.py", "prometheus_client/")),
    ("event loop/threads", ("streaming/offload.py",)),  # our hand-off to the prepare threads
    ("other", ("streaming/",)),  # the rest of our code (the operator's wiring): other, not what calls it
)
GENERIC = (  # used only where no specific rule matched anywhere on the stack
    ("gRPC", ("grpc/",)),
    ("bridge/serialisation", ("json/", "pickle.py", "copyreg.py")),
    ("event loop/threads", ("asyncio/", "concurrent/futures/", "threading.py", "queue.py", "selectors.py")),
)
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int | None = None

    def label(self) -> str:
        return f"{self.function} ({self.file})" if self.file else self.function


@dataclass(frozen=True)
class Stack:
    frames: tuple[Frame, ...]  # root first
    count: int


@dataclass(frozen=True)
class StageRow:
    stage: str
    samples: int
    share: float
    top: tuple[tuple[str, int], ...]  # the stage's most frequent innermost frames, with their samples


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if not match:
        return Frame(text.strip(), "")
    line = match.group("line")
    return Frame(match.group("function"), match.group("file"), int(line) if line else None)


def parse_collapsed(text: str) -> list[Stack]:
    """py-spy's raw output (collapsed stacks); lines that are not `stack count` are skipped."""
    stacks = []
    for line in text.splitlines():
        body, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        frames = tuple(parse_frame(f) for f in body.split(";") if f.strip())
        stacks.append(Stack(frames, int(count)))
    return stacks


def _match(frame: Frame, rules: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    path = frame.file.replace("\\", "/")
    for stage, needles in rules:
        if any(needle in path for needle in needles):
            return stage
    return None


def classify(frames: tuple[Frame, ...]) -> str:
    """The stage of one stack (see the module docstring)."""
    for rules in (SPECIFIC, GENERIC):
        for frame in reversed(frames):
            stage = _match(frame, rules)
            if stage:
                return stage
    return "other"


def group(stacks: Iterable[Stack], top: int = 3) -> list[StageRow]:
    """Samples per stage (in `STAGES` order, empty stages included), with each stage's top frames."""
    samples: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = {stage: Counter() for stage in STAGES}
    for stack in stacks:
        stage = classify(stack.frames)
        samples[stage] += stack.count
        leaves[stage][stack.frames[-1].label() if stack.frames else "(no frame)"] += stack.count
    total = sum(samples.values())
    return [StageRow(stage, samples[stage], samples[stage] / total if total else 0.0,
                     tuple(leaves[stage].most_common(top))) for stage in STAGES]


def table(rows: list[StageRow], cpu_ms_per_image: float | None = None) -> str:
    """Markdown: samples and share per stage; with the worker's CPU ms per image (decoders
    excluded), also share x that, an estimate of each stage's CPU ms per image."""
    head = "| stage | samples | share |" + (" ≈ CPU ms/image |" if cpu_ms_per_image else "") + " top frames |"
    lines = [head, "|---|---|---|" + ("---|" if cpu_ms_per_image else "") + "---|"]
    for row in rows:
        est = f" {row.share * cpu_ms_per_image:.2f} |" if cpu_ms_per_image else ""
        top = "; ".join(f"{label.replace('|', '/')} {n}" for label, n in row.top) or "–"
        lines.append(f"| {row.stage} | {row.samples} | {row.share:.1%} |{est} {top} |")
    total = sum(row.samples for row in rows)
    lines.append(f"| total | {total} | 100% |" + (f" {cpu_ms_per_image:.2f} |" if cpu_ms_per_image else "") + " |")
    return "\n".join(lines)


def speedscope(stacks: list[Stack], name: str) -> dict:
    """The same samples as a speedscope file (https://www.speedscope.app): one sampled profile."""
    index: dict[Frame, int] = {}
    samples, weights = [], []
    for stack in stacks:
        samples.append([index.setdefault(frame, len(index)) for frame in stack.frames])
        weights.append(stack.count)
    frames = [{"name": f.function, "file": f.file, **({"line": f.line} if f.line is not None else {})}
              for f in index]
    return {"$schema": "https://www.speedscope.app/file-format-schema.json", "name": name,
            "exporter": "imgstream bench profile", "activeProfileIndex": 0, "shared": {"frames": frames},
            "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                          "endValue": sum(weights), "samples": samples, "weights": weights}]}
