"""The authors' DM and DC/DSA iterations (VICO-UoE/DatasetCondensation ``main_DM.py`` and ``main.py``, rendered in
:mod:`zoo.bench.reference.datasetcondensation`) behind the call ``zoo bench condense-speed`` makes.

Each call builds the authors' :class:`ReferenceConvNet` (fresh weights, as their ``get_network``), draws each
class's real batch from ``generator`` (their ``get_images`` draws from numpy), and gives their ``DiffAugment`` a
siamese seed from ``generator`` (theirs comes from the clock); ``dsa=None`` runs DC without augmentation.
"""

import torch

from ...data.dsa import DSA
from .convnet import ReferenceConvNet
from .datasetcondensation import dc_iteration as authors_dc_iteration
from .datasetcondensation import dm_iteration as authors_dm_iteration
from .datasetcondensation import make_args

__all__ = ["dc_iteration", "dm_iteration"]


def _get_images(images_real, by_class, generator):
    def get_images(c, n):
        idx = by_class[c]
        return images_real[idx[torch.randperm(len(idx), generator=generator)[:n]]]

    return get_images


def _seeds(generator):
    return lambda: int(torch.randint(100000, (1,), generator=generator))


def dm_iteration(images_real, by_class, image_syn, opt, ipc, batch_real, dsa: DSA, generator, channel=3, size=32):
    net = ReferenceConvNet(channel, len(by_class), im_size=(size, size))
    args = make_args(ipc=ipc, batch_real=batch_real, dsa=dsa is not None, dsa_strategy=dsa.strategy if dsa else "None")
    return authors_dm_iteration(net, image_syn, opt, _get_images(images_real, by_class, generator), args,
                                len(by_class), _seeds(generator))  # fmt: skip


def dc_iteration(
    images_real, by_class, image_syn, label_syn, opt, ipc, batch_real, outer, inner, dsa: DSA, generator,
    channel=3, size=32,
):  # fmt: skip
    net = ReferenceConvNet(channel, len(by_class), im_size=(size, size))
    args = make_args(ipc=ipc, batch_real=batch_real, outer_loop=outer, inner_loop=inner, dsa=dsa is not None,
                     dsa_strategy=dsa.strategy if dsa else "None")  # fmt: skip
    return authors_dc_iteration(net, image_syn, label_syn, opt, _get_images(images_real, by_class, generator), args,
                                len(by_class), _seeds(generator))  # fmt: skip
