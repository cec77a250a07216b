"""Scoring: metrics on frame pairs (``metrics``), classic-codec baselines (``baselines``), runs (``run``) and
reports (``report``). See docs/eval.md.

Typical use::

    from nerfvc.eval.metrics import prepare_reference, evaluate
    ref = prepare_reference(gt_frames)                  # once per GT sequence
    summary = evaluate(ref, decoded, bitrate_kbps=kbps)["summary"]
"""
