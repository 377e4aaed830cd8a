"""Pruning during training: recovery fine-tuning with fixed masks, distillation from the dense model, and
gradual pruning on Zhu & Gupta's cubic schedule.

Modules: ``schedule`` (the cubic schedule), ``data`` (training streams that never overlap held-out text),
``losses`` (logit KL, hidden-state MSE, next-token CE), ``student`` (the private trainable copy),
``masking`` (gradual masks from the student's weights), ``budget`` (memory estimate, job slots),
``checkpoints`` (safetensors), ``settings`` (:class:`TrainSettings`), ``job`` (:func:`train`) and ``result``
(what a run produced: curve points, the best checkpoint, :class:`TrainResult`).
"""
