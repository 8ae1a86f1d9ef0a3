"""The parts of ``benchmarks/gpu_check.py``, one concern per module (the script's docstring says what each checks).

* :mod:`gpu.report`: the report (JSON + Markdown, rewritten atomically after every part) and the run context;
* :mod:`gpu.cuda_tests`: the suite's CUDA test cases through pytest;
* :mod:`gpu.parity`: every transform family and sampler option on the device against the CPU and float64;
* :mod:`gpu.determinism`: the sampler's backward under ``torch.use_deterministic_algorithms(True)``, bitwise;
* :mod:`gpu.compiled`: ``torch.compile`` of the ST-CNNs against eager;
* :mod:`gpu.amp`: fp16 training with a gradient scaler through the engine, against fp32;
* :mod:`gpu.timings`: the affine ST step, the sampler's bandwidth against a copy, the TPS grid, a training step;
* :mod:`gpu.paper_cell`: Table 1's RTS ST-CNN (affine) on the paper's schedule, resumable across leases.
"""
