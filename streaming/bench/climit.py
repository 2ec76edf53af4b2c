"""The C limit: libjpeg-turbo decoding at a given DCT scale with no Python at all.

A few lines of C over the TurboJPEG API, compiled with gcc when the benchmark runs and linked
to the same libturbojpeg that PyTurboJPEG loads (Debian's `libturbojpeg0`; the header comes
from `libturbojpeg0-dev`). Each iteration reads the header and decodes to packed RGB at the
scale asked, with the engine's flags, into one reused buffer, the photos of a group in turn
(as the Python loops take them); the loop times itself with the process CPU clock, so neither
process start-up nor the file read is in the number. glibc is
told to keep freed memory (a fresh process otherwise pays page faults for every progressive
file's whole-image coefficient buffer, ~10% at 1080p), so this is an upper bound.

Chosen over `djpeg -scale M/N` minus its start-up: djpeg also writes a PPM per run, and the
start-up to subtract (~1 ms) is a noisy fraction of a 4-30 ms decode on a shared machine.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streaming.decode import TURBO_FLAGS

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <malloc.h>
#include <turbojpeg.h>

static double clock_s(clockid_t id) {
  struct timespec t; clock_gettime(id, &t); return t.tv_sec + t.tv_nsec * 1e-9;
}

/* FLAGS MIN_SECONDS MIN_ITERATIONS then FILE NUM DEN for each photo, decoded in turn */
int main(int argc, char **argv) {
  if (argc < 7 || (argc - 4) % 3) { fprintf(stderr, "usage: FLAGS MIN_S MIN_N (FILE NUM DEN)...\n"); return 2; }
  /* keep freed memory: no page faults for progressive files' whole-image coefficient buffers */
  mallopt(M_MMAP_THRESHOLD, 256 << 20); mallopt(M_TRIM_THRESHOLD, 512 << 20);
  int flags = atoi(argv[1]); double min_s = atof(argv[2]); long min_n = atol(argv[3]);
  int count = (argc - 4) / 3;
  unsigned char **jpeg = calloc(count, sizeof *jpeg);
  long *size = calloc(count, sizeof *size);
  tjscalingfactor *sf = calloc(count, sizeof *sf);
  size_t biggest = 0;
  tjhandle h = tjInitDecompress();
  int w, hh, ss, cs;
  for (int i = 0; i < count; i++) {
    FILE *f = fopen(argv[4 + 3 * i], "rb");
    if (!f) { perror(argv[4 + 3 * i]); return 2; }
    fseek(f, 0, SEEK_END); size[i] = ftell(f); fseek(f, 0, SEEK_SET);
    jpeg[i] = malloc(size[i]);
    if (fread(jpeg[i], 1, size[i], f) != (size_t)size[i]) { perror("read"); return 2; }
    fclose(f);
    sf[i].num = atoi(argv[5 + 3 * i]); sf[i].denom = atoi(argv[6 + 3 * i]);
    if (tjDecompressHeader3(h, jpeg[i], size[i], &w, &hh, &ss, &cs)) { fprintf(stderr, "%s\n", tjGetErrorStr2(h)); return 3; }
    size_t need = (size_t)TJSCALED(w, sf[i]) * TJSCALED(hh, sf[i]) * 3;
    if (need > biggest) biggest = need;
  }
  unsigned char *out = malloc(biggest);
  long n = 0; double c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w0 = clock_s(CLOCK_MONOTONIC), c1;
  do {
    int i = n % count;
    if (tjDecompressHeader3(h, jpeg[i], size[i], &w, &hh, &ss, &cs) ||
        tjDecompress2(h, jpeg[i], size[i], out, TJSCALED(w, sf[i]), 0, TJSCALED(hh, sf[i]), TJPF_RGB, flags)) {
      fprintf(stderr, "%s\n", tjGetErrorStr2(h)); return 3;
    }
    n++; c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
  } while (c1 - c0 < min_s || n < min_n || n % count);
  printf("{\"iterations\": %ld, \"cpu_s\": %.6f, \"wall_s\": %.6f}\n", n, c1 - c0, clock_s(CLOCK_MONOTONIC) - w0);
  tjDestroy(h); free(out);
  return 0;
}
"""


@dataclass(frozen=True)
class CRun:
    iterations: int  # a whole number of rounds over the photos
    cpu_s: float
    wall_s: float


class CLimit:
    """Builds the C program once (in a temporary folder) and runs it per photo."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="imgstream-climit-"))
        self.binary: Path | None = None
        self.unavailable: str | None = None
        self._build()

    def _build(self) -> None:
        gcc = shutil.which("gcc")
        if gcc is None:
            self.unavailable = "gcc not found (apt-get install gcc libturbojpeg0-dev)"
            return
        source = self._dir / "climit.c"
        source.write_text(SOURCE)
        binary = self._dir / "climit"
        done = subprocess.run([gcc, "-O2", "-o", str(binary), str(source), "-lturbojpeg"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            self.unavailable = ("compiling the TurboJPEG loop failed (is libturbojpeg0-dev "
                                f"installed?): {done.stderr.strip().splitlines()[-1:]}")
            return
        self.binary = binary

    def run(self, photos: list[tuple[Path, tuple[int, int]]], min_seconds: float,
            min_iterations: int = 2) -> CRun:
        """Decode the photos in turn, each at its (num, den) scale, like the Python loops do."""
        if self.binary is None:
            raise RuntimeError(self.unavailable)
        args = [str(self.binary), str(TURBO_FLAGS), f"{min_seconds:.6f}", str(min_iterations)]
        for path, (num, den) in photos:
            args += [str(path), str(num), str(den)]
        out = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
        return CRun(out["iterations"], out["cpu_s"], out["wall_s"])

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
