"""Analysis: float vs quantized, judged output by output, offline over saved runs.

``kinds/`` holds one file per output kind (classification, multi-label, regression,
detection, segmentation), each registering itself; ``plan`` decides which kind each
output is (and says why); ``compare`` turns per-sample evidence into per-cell figures
and the verdict; ``intervals`` gives every rate its confidence interval; ``gates``
turns a report into CI pass/fail. Nothing here imports a transport or a runtime.
"""
