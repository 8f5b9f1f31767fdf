"""The article's own figures (shared/seed/000_a8195a080e4a99cd.txt, "Inference Performance
Benchmarks"), transcribed so reports can set them beside our measurements. The article
measured on "a single NVIDIA A100 80GB GPU", 3B-class models; it does not say how. Rows
are keyed by the archbench preset of the same shape class."""

ARTICLE_HARDWARE = "A100 80GB (article)"

# "Tokens/sec at various sequence lengths (3B params, A100 GPU)": generation speed
ARTICLE_DECODE_TOKENS_PER_S = {
    "rwkv6-3b": {512: 2400, 2048: 2350, 8192: 2300, 32768: 2250, 131072: 2200, 524288: 2100},
    "pythia-2.8b": {512: 2200, 2048: 1800, 8192: 950, 32768: 280, 131072: "OOM", 524288: "OOM"},
    "mamba2-2.7b": {512: 2500, 2048: 2450, 8192: 2400, 32768: 2350, 131072: 2300, 524288: 2200},
}

# "Memory Usage (inference state)", GB
ARTICLE_MEMORY_GB = {
    "rwkv6-3b": {1024: 6.2, 8192: 6.2, 131072: 6.2, 1048576: 6.2},
    "pythia-2.8b": {1024: 6.5, 8192: 8.1, 131072: 32.4, 1048576: "OOM"},
    "mamba2-2.7b": {1024: 6.3, 8192: 6.3, 131072: 6.3, 1048576: 6.3},
}
