# The MediaPipe Face Mesh method's own environment (.venv-mediapipe/), built from envs/mediapipe.lock.
# Included by the main Makefile (`include mk/mediapipe.mk`), which exposes it as the phony target `mediapipe-env`:
#
#     mediapipe-env: $(MP_STAMP)
#
# mediapipe 0.10.21 needs numpy<2 and protobuf<5, so it cannot live in .venv; flmlib/landmarkers/mediapipe_mesh.py
# starts flmlib/landmarkers/mediapipe_worker.py with $(MP_BIN)/python instead. Variables are prefixed MP_ so they
# do not clash with the main Makefile's. The lock is deliberately partial (unused dependencies of mediapipe are left
# out), hence --no-deps; the last step fails the build if Face Mesh cannot be imported.

# Whether included before or after the main Makefile's first target, this file leaves the default goal alone.
MP_DEFAULT_GOAL := $(.DEFAULT_GOAL)

MP_PYTHON ?= python3.11
MP_VENV   := .venv-mediapipe
MP_BIN    := $(MP_VENV)/bin
MP_LOCK   := envs/mediapipe.lock
MP_STAMP  := $(MP_VENV)/.installed

$(MP_STAMP): $(MP_LOCK)
	test -x $(MP_BIN)/python || $(MP_PYTHON) -m venv $(MP_VENV)
	$(MP_BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r $(MP_LOCK)
	$(MP_BIN)/python -c "import mediapipe.python.solutions.face_mesh"
	touch $(MP_STAMP)

.DEFAULT_GOAL := $(MP_DEFAULT_GOAL)
