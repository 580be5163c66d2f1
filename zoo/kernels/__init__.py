"""The zoo's C++ CPU kernels: their sources, their build at first use, and the Python that loads and dispatches them.

Each kernel library is a C++ source shipped with the package, beside the module that builds it (by
``torch.utils.cpp_extension``, at the first call, never at import), registers its operators' shapes for
``torch.compile`` and chooses among its instruction paths; the rooms above call these modules, never the operators'
build. Importing this package builds nothing.

=========================  ===========================================================================================
``build``                  :func:`~zoo.kernels.build.build` / :func:`~zoo.kernels.build.build_or_warn`: a library
                           compiled once into torch's extension cache under a name keyed by its sources, flags and
                           torch (:func:`~zoo.kernels.build.build_name`); a machine that cannot build warns once
``gemv``                   ``gemv.cpp`` (+ ``gemv_a8.h``, ``simd.h``) as ``torch.ops.zoo_gemv``: the one-row
                           float32, int8 and int4 products of decoding, the 8-bit activation GEMMs, one token's
                           attention; :func:`~zoo.kernels.gemv.kernel_choice`, the one CPU dispatch (``ZOO_GEMV_ISA``,
                           the only path, or the one measured fastest here); :class:`~zoo.kernels.gemv.OneRowProducts`
                           (the compiled decode step's pass to them). Called by :mod:`zoo.lm`'s quantized layers and
                           decode step
``winograd``               ``winograd.cpp`` as ``torch.ops.zoo_conv``: 3x3 convolutions by Winograd's F(2x2, 3x3)
                           and their weights' gradient, one-channel convolutions, 2x2 pooling with PyTorch's bits, a
                           fused norm-ReLU-pooling backward; :func:`~zoo.kernels.winograd.winograd_weights` (the
                           panels the kernel reads). Called by :mod:`zoo.condense.fast_convs`
``vision``                 ``vision.cpp`` (+ ``simd.h``) as ``torch.ops.zoo_vision``: a depthwise convolution's
                           forward pass (oneDNN's bits) and weights' gradient on channels-last maps, StarReLU forward
                           and backward in one pass each, the token rows' products, GELU, multi-head attention.
                           Called by :mod:`zoo.layers` in eager float32 CPU training (the depthwise forward in
                           inference too)
=========================  ===========================================================================================

Every instruction path of a kernel gives the same bits, so a dispatch changes speed only;
``tests/kernels/test_gemv*.py`` check every path this CPU runs, and the emulated ones on a CPU without them;
``tests/kernels/test_winograd.py`` holds the convolutions to bounds derived from float32's rounding,
``tests/kernels/test_vision_kernels.py`` the vision kernels.
"""
