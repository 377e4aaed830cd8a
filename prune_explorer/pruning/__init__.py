"""Deciding what to zero: calibration, scores, masks, rankings and the slider kernels, structured units,
the magnitude policies, and every method behind one registry (``pruning.methods``)."""
