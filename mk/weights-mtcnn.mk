# MTCNN's weights, taken from the facenet-pytorch wheel: O-Net's for the `mtcnn_onet` initialiser
# (flmlib/pretrained/mtcnn_onet.py), and all three nets for the MTCNN face detector (flmlib/mtcnn_detector.py). Included by the main Makefile, which provides BIN (the study's .venv/bin) and can depend on
# every pretrained weight file through $(WEIGHT_FILES).
#
# facenet-pytorch pins an old torch, so it must never be installed into .venv: `pip download --no-deps` only saves
# the pinned wheel under weights/.wheels (it resolves and installs nothing, and leaves the environment untouched),
# and Python's zipfile unpacks the files needed (no `unzip` binary):
#   facenet_pytorch/data/onet.pt       -> weights/mtcnn_onet.pt              (O-Net state dict)
#   facenet_pytorch/data/pnet.pt       -> weights/mtcnn_pnet.pt              (P-Net, the detector's first stage)
#   facenet_pytorch/data/rnet.pt       -> weights/mtcnn_rnet.pt              (R-Net, its second stage)
#   facenet_pytorch/models/mtcnn.py    -> weights/facenet_pytorch_mtcnn.py   (reference implementation, for the tests)

# Whether included before or after the main Makefile's first target, this file leaves the default goal alone.
MTCNN_DEFAULT_GOAL := $(.DEFAULT_GOAL)

MTCNN_WHEEL_VERSION := 2.6.0
MTCNN_WHEEL_DIR     := weights/.wheels
MTCNN_WHEEL         := $(MTCNN_WHEEL_DIR)/facenet_pytorch-$(MTCNN_WHEEL_VERSION)-py3-none-any.whl

# The reference module is listed too, so that `make weights` also restores it when only it was deleted.
WEIGHT_FILES += weights/mtcnn_onet.pt weights/mtcnn_pnet.pt weights/mtcnn_rnet.pt weights/facenet_pytorch_mtcnn.py

$(MTCNN_WHEEL):
	mkdir -p $(MTCNN_WHEEL_DIR)
	$(BIN)/python -m pip download --quiet --no-deps --disable-pip-version-check \
		facenet-pytorch==$(MTCNN_WHEEL_VERSION) -d $(MTCNN_WHEEL_DIR)
	test -f $@

# $(call mtcnn_extract,member): write the wheel's member to the target (through a temporary file, so an
# interrupted run leaves no truncated target behind).
mtcnn_extract = $(BIN)/python -c 'import sys, zipfile; open(sys.argv[3], "wb").write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
	$< $(1) $@.tmp && mv $@.tmp $@

weights/mtcnn_onet.pt: $(MTCNN_WHEEL)
	$(call mtcnn_extract,facenet_pytorch/data/onet.pt)

weights/mtcnn_pnet.pt: $(MTCNN_WHEEL)
	$(call mtcnn_extract,facenet_pytorch/data/pnet.pt)

weights/mtcnn_rnet.pt: $(MTCNN_WHEEL)
	$(call mtcnn_extract,facenet_pytorch/data/rnet.pt)

weights/facenet_pytorch_mtcnn.py: $(MTCNN_WHEEL)
	$(call mtcnn_extract,facenet_pytorch/models/mtcnn.py)

.DEFAULT_GOAL := $(MTCNN_DEFAULT_GOAL)
