"""Performance harness: round time and memory of the local engine, the Ray engine and a
torch.distributed (gloo) peer. Entry point: `python main.py bench [--quick] [--output FILE]`."""


def command(args) -> int:
    """`python main.py bench`: the CPU harness, the GPU comparison (--device cuda), the
    scaling sweep (--scale), the CPU ceiling (--ceiling), the default run's round on Ray
    (--ray-round) or its start-up (--startup), per the parsed arguments of qgm_ray.cli."""
    if args.startup:
        from bench.startup import main as startup_main
        return startup_main(quick=args.quick, output=args.output)
    if args.ceiling:
        from bench.ceiling import main as ceiling_main
        return ceiling_main(quick=args.quick, output=args.output)
    if args.ray_round:
        from bench.ray_round import main as ray_round_main
        return ray_round_main(quick=args.quick, output=args.output)
    if args.scale:
        from bench.scale import main as scale_main
        return scale_main(quick=args.quick, output=args.output)
    if args.device == "cuda":
        from bench.gpu import main as gpu_main
        return gpu_main(quick=args.quick, output=args.output)
    from bench.harness import main as bench_main
    return bench_main(quick=args.quick, output=args.output)
