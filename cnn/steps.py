"""The speed rewrites: from a network's list of layers to the list of steps that
training runs.

Explained in the chapter *Performance*. The steps compute the same logits as the layers,
faster.
"""

from .conv_maxpool import ConvMaxPool
from .layers import MaxPoolLayer, ReLU


def training_steps(layers):
    """The steps that training and prediction run: ``layers`` (a list), with two changes
    that compute the same logits faster.

    1. A ReLU directly followed by a MaxPoolLayer runs after the pool. The two commute:
       ``max(0, max of a window) = max over the window of max(0, x)``, and the backward
       passes agree too (a window whose maximum is <= 0 passes no gradient either way).
       So the output and every gradient are exactly the same, and the ReLU touches
       ``pool_size**2`` times fewer numbers.
    2. A ConvLayer directly followed (after change 1) by a MaxPoolLayer whose windows
       tile its output (``stride == pool_size``) becomes one
       :class:`~cnn.conv_maxpool.ConvMaxPool` step: the convolution computes its output
       grouped by position in the pooling window, so the pooling works on whole
       contiguous blocks. The logits are the same; the convolution's gradients differ
       only by rounding (its sums over pixels are taken in another order).

    The steps share the layers' parameters (a ConvMaxPool's are its convolution's), so
    an optimizer that updates the layers updates the steps. Every other layer, a
    reader's own included, is a step as it is, and so is a subclass of a built-in layer
    (it may have changed what the rewrite relies on).
    """
    order = list(layers)
    for i in range(len(order) - 1):
        if type(order[i]) is ReLU and type(order[i + 1]) is MaxPoolLayer:
            order[i], order[i + 1] = order[i + 1], order[i]
    steps = []
    for layer in order:
        if steps and ConvMaxPool.fits(steps[-1], layer):
            steps[-1] = ConvMaxPool(steps[-1], layer)
        else:
            steps.append(layer)
    return steps
