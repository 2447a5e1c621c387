"""A landmarker from outside flmlib, for the pipeline test: params.yaml names it as ``kind: tests.fake_landmarker``.

It places one fixed shape (the iBUG layout of a frontal face, roughly) in every box, and gives up (NaN) on every
third face, so the test also sees a method that cannot place some faces.
"""
import numpy as np

from flmlib.crops import box_units_to_image
from flmlib.landmarkers.base import N_POINTS, MethodSpec, check_batch, check_boxes

#: ``(68, 2)`` box units: points spread over the central part of the box, in a fixed order.
TEMPLATE = np.stack([np.linspace(0.2, 0.8, N_POINTS), 0.5 + 0.3 * np.sin(np.linspace(0, 6, N_POINTS))], -1)


class FixedShape:
    def __init__(self, spec: MethodSpec, give_up_every: int = 3):
        self.spec, self.give_up_every, self._seen = spec, give_up_every, 0

    @property
    def name(self) -> str:
        return self.spec.id

    def predict(self, image, boxes) -> np.ndarray:
        boxes = check_boxes(boxes)
        points = box_units_to_image(np.broadcast_to(TEMPLATE, (len(boxes), N_POINTS, 2)), boxes).astype(np.float32)
        for i in range(len(boxes)):
            self._seen += 1
            if self._seen % self.give_up_every == 0:
                points[i] = np.nan
        return points

    def predict_batch(self, images, boxes_list) -> list[np.ndarray]:
        images, boxes_list = check_batch(images, boxes_list)
        return [self.predict(image, boxes) for image, boxes in zip(images, boxes_list)]


def build(spec: MethodSpec, **options) -> FixedShape:
    return FixedShape(spec, **options)
