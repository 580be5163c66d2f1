"""Plain rendition of the authors' ConvNet (VICO-UoE/DatasetCondensation, ``networks.py``): the evaluation network
of dataset distillation, as their code builds it.

One ``nn.Sequential`` named ``features`` of ``[conv, norm, act, pool] * depth`` and a ``classifier`` Linear on the
flattened map; instance norm is ``GroupNorm(width, width, affine=True)``; the first conv pads by 3 for a
single-channel 28x28 input. Parity tests load its state dict (its own key names) into ``zoo.create_model`` through
the family's ``checkpoint_filter_fn`` and compare logits and embeddings.
"""

import torch
from torch import nn

__all__ = ["ReferenceConvNet"]


class ReferenceConvNet(nn.Module):
    def __init__(
        self, channel=3, num_classes=10, net_width=128, net_depth=3, net_norm="instancenorm", im_size=(32, 32)
    ):
        super().__init__()
        layers, c, h, w = [], channel, im_size[0], im_size[1]
        if im_size[0] == 28:
            h = w = 32
        for d in range(net_depth):
            layers.append(nn.Conv2d(c, net_width, kernel_size=3, padding=3 if channel == 1 and d == 0 else 1))
            if net_norm == "instancenorm":
                layers.append(nn.GroupNorm(net_width, net_width, affine=True))
            elif net_norm == "batchnorm":
                layers.append(nn.BatchNorm2d(net_width))
            layers.append(nn.ReLU(inplace=True))
            layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
            c, h, w = net_width, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        # theirs: view; reshape is the same values, and also takes the channels-last strides that today's torch
        # gives a one-channel crop (DiffAugment's permute) through the convolutions
        return out.reshape(out.size(0), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
