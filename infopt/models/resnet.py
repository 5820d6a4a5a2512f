"""ResNet-50 from torchvision: the lab's vision model."""

from __future__ import annotations

import torch
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models.resnet import Bottleneck, ResNet

from infopt.determinism import seed_everything
from infopt.errors import InvalidInputError
from infopt.models.base import Inputs, ModelWrapper
from infopt.models.weights import load_torchvision_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNet50(ModelWrapper):
    """torchvision ResNet-50 on normalized 3 x H x W images (224 by default).

    ``size="tiny"`` keeps the bottleneck architecture with one block per stage,
    a quarter of the bottleneck width, 100 classes and 64 x 64 images.
    """

    name = "resnet50"
    task = "vision"
    source = "torchvision.models.resnet50"

    @classmethod
    def build(cls, *, weights: str, size: str, seed: int, **options) -> "ResNet50":
        image_size = int(options.pop("image_size", 224 if size == "full" else 64))
        if options:
            raise InvalidInputError(f"Unknown option(s) for resnet50: {', '.join(sorted(options))}.")
        seed_everything(seed)
        if size == "tiny":
            if weights == "pretrained":
                raise InvalidInputError("Pretrained weights exist only for size='full' resnet50.")
            module = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=100, width_per_group=16)
        else:
            module = resnet50(weights=None)
            if weights == "pretrained":
                module.load_state_dict(load_torchvision_weights(ResNet50_Weights.IMAGENET1K_V2))
        wrapper = cls(module, weights=weights, size=size, seed=seed, options={"image_size": image_size})
        wrapper.image_size = image_size
        return wrapper

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        """ImageNet-normalized random images, ``(batch, 3, H, W)`` float32."""
        self._check_batch_size(batch_size)
        if seq_len is not None:
            raise InvalidInputError("resnet50 takes images, not sequences: do not pass seq_len.")
        pixels = torch.rand(batch_size, 3, self.image_size, self.image_size, generator=self._generator(seed))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return {"pixel_values": ((pixels - mean) / std).to(self.device)}

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.module(inputs["pixel_values"])

    def input_description(self, seq_len: int | None = None) -> dict:
        return {"input": f"3x{self.image_size}x{self.image_size} normalized image", "image_size": self.image_size}
