"""The GPU benchmark (benchmarks/gpu.sh): a GPT-style decoder and a ResNet-50 trained by
`python -m dtrain` and by a hand-written PyTorch loop side by side, as JSON."""
