"""MediaPipe Face Mesh worker: runs in the mediapipe environment (``.venv-mediapipe``), never in the study's.

Started by :mod:`flmlib.landmarkers.mediapipe_mesh` as ``<mediapipe python> mediapipe_worker.py [options]``, by file
path, so neither ``flmlib/__init__`` nor torch is imported here. Imports only the standard library, numpy, cv2
(through mediapipe) and mediapipe. One process serves many requests.

Protocol (binary, on stdin / stdout). A *frame* is an 8-byte little-endian unsigned length followed by that many
bytes of one ``np.save`` array (``allow_pickle=False``).

* After start-up the worker sends one frame: ``(3,) int64`` ``[PROTOCOL_VERSION, N_MESH, os.getpid()]``, so
  the client knows the mesh was built before it sends work (an import or model error surfaces here).
* Request: ``(N, S, S, 3) uint8`` RGB crops (N may be 0).
* Reply: ``(N, 468, 2) float32`` mesh vertices in 0-based pixels of the crop (pixel centres at integers; x right,
  y down); all-NaN rows for a crop where the mesh found no face.
* End of input (stdin closed) ends the worker with status 0. Any error ends it with a traceback on stderr and a
  non-zero status; the client reports the stderr tail.

MediaPipe's C++ logging and any stray print from native code go to stderr: the worker moves the real stdout to a
private descriptor for the protocol and points descriptor 1 at stderr before importing mediapipe.
"""
from __future__ import annotations

import argparse
import io
import os
import struct
import sys

PROTOCOL_VERSION = 1
N_MESH = 468
_LEN = struct.Struct("<Q")


def _read_exact(stream, n: int) -> bytes | None:
    """``n`` bytes from ``stream``; ``None`` on a clean end of input before the first byte."""
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            if got == 0:
                return None
            raise EOFError(f"input ended after {got} of {n} bytes of a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(stream):
    """One array frame from ``stream`` (``None`` at end of input)."""
    import numpy as np

    head = _read_exact(stream, _LEN.size)
    if head is None:
        return None
    (length,) = _LEN.unpack(head)
    body = _read_exact(stream, length)
    if body is None:
        raise EOFError(f"input ended before a frame body of {length} bytes")
    return np.load(io.BytesIO(body), allow_pickle=False)


def write_frame(stream, array) -> None:
    """Write ``array`` as one frame and flush."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    data = buf.getvalue()
    stream.write(_LEN.pack(len(data)))
    stream.write(data)
    stream.flush()


def _protocol_stdout():
    """A binary stream on the real stdout; descriptor 1 then points at stderr, so nothing else can write to it."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def serve(out, hello, handle) -> None:
    """The worker's loop: send ``hello`` (the start-up frame), then answer every request frame read from stdin with
    the frame ``handle(request)`` until stdin ends. An exception ends the worker (its traceback goes to stderr)."""
    write_frame(out, hello)
    stdin = sys.stdin.buffer
    while (request := read_frame(stdin)) is not None:
        write_frame(out, handle(request))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-detection-confidence", type=float, default=0.5)
    args = parser.parse_args(argv)

    out = _protocol_stdout()
    # Fewer lines of MediaPipe / TFLite chatter on stderr (warnings still pass through; errors always do).
    os.environ.setdefault("GLOG_minloglevel", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

    import numpy as np
    from mediapipe.python.solutions import face_mesh

    # static_image_mode: every crop is an independent photo (detector on each, no tracking between requests);
    # max_num_faces=1: the crop is centred on one face box; refine_landmarks=False: the 468-vertex mesh without the
    # 10 iris points, which the 68-point mapping does not use.
    mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                              min_detection_confidence=args.min_detection_confidence)

    def place(crops):
        """``(N, S, S, 3) uint8`` crops -> ``(N, 468, 2) float32`` crop pixels, NaN rows where no face."""
        if crops.ndim != 4 or crops.shape[3] != 3 or crops.shape[1] != crops.shape[2] or crops.dtype != np.uint8:
            raise ValueError(f"request must be (N, S, S, 3) uint8 crops, got {crops.dtype} {crops.shape}")
        size = crops.shape[1]
        result = np.full((len(crops), N_MESH, 2), np.nan, np.float32)
        for i, crop in enumerate(crops):
            found = mesh.process(np.ascontiguousarray(crop)).multi_face_landmarks
            if not found:
                continue
            lm = found[0].landmark
            if len(lm) != N_MESH:
                raise RuntimeError(f"face mesh returned {len(lm)} vertices, expected {N_MESH}")
            xy = np.array([(p.x, p.y) for p in lm], np.float64)
            # MediaPipe's normalised coordinates put the image's outer edges at 0 and 1; 0-based pixel centres
            # (the study's convention) are half a pixel in from the edge.
            result[i] = xy * size - 0.5
        return result

    serve(out, np.array([PROTOCOL_VERSION, N_MESH, os.getpid()], np.int64), place)
    mesh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
