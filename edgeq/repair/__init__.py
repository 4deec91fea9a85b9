"""Repair: find the op that dynamic-range quantization breaks, and ship a model without the break.

``localize`` runs the float and the quantized model with every intermediate tensor kept
(delegates off) and ranks the hybrid ops (int8 weights, float activations) by the error
each one adds, then confirms the leaders by re-quantizing with each kept float.
``fix`` searches for the smallest set of ops to keep float so that every field condition of
the risky suite stays under a drop target, and verifies the result on that suite; a model
with every op float is the float model, never called a fix (``no-quantized-variant``).
Whole-model drops use the target's resolver (``--resolver``, evaluate's); only the per-op
analysis runs on the built-in kernels, and every result says which numbers came from which.
``selective`` builds those partly quantized models (ai-edge-quantizer recipes);
``measure`` runs models on the suite and turns outputs into per-condition drops.
"""
