from bench.tune.cli import main

main()
