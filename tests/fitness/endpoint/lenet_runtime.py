"""The MLServer runtime of the tests: the LeNet's ONNX export, run by ONNX Runtime (one thread).

Loaded by MLServer from the model folder (``implementation: lenet_runtime.LeNetRuntime``); the
model settings' ``parameters.extra`` say which output it gives (``probabilities`` or
``logits``), the input layout (``NHWC``), a fault to serve (``nan``: NaN scores, ``wide``: 9
columns) and where to count the images it scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class LeNetRuntime(MLModel):
    """Scores FP32 images with the LeNet; top-k strings when an output asks for ``classification``."""

    async def load(self) -> bool:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        extra = self.settings.parameters.extra or {}
        self._output = extra.get("output", "probabilities")
        self._layout = extra.get("layout", "NCHW")
        self._fault = extra.get("fault")
        self._count = Path(extra["count"]) / f"count-{self.settings.name}.txt"
        self._served = 0
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        if self._layout == "NHWC":
            images = images.transpose(0, 3, 1, 2)
        logits = self._session.run(None, {"images": np.ascontiguousarray(images)})[0]
        self._served += len(images)
        self._count.write_text(str(self._served))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = logits if self._output == "logits" else shifted / shifted.sum(axis=1, keepdims=True)
        if self._fault == "nan":
            scores[0, 0] = np.nan
        if self._fault == "wide":
            scores = scores[:, :9]
        asked = payload.outputs[0] if payload.outputs else None
        top_k = None
        if asked is not None and asked.parameters is not None:
            top_k = (asked.parameters.model_extra or {}).get("classification")
        if top_k:
            order = np.argsort(-scores, axis=1, kind="stable")[:, : int(top_k)]
            strings = [
                f"{float(scores[row, index])!r}:{index}" for row in range(len(scores)) for index in order[row]
            ]
            output = ResponseOutput(
                name=self._output, shape=[len(scores), int(top_k)], datatype="BYTES", data=strings
            )
        else:
            output = ResponseOutput(
                name=self._output,
                shape=list(scores.shape),
                datatype="FP32",
                data=scores.astype(np.float32).ravel().tolist(),
            )
        return InferenceResponse(model_name=self.name, outputs=[output])
