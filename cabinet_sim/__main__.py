"""`python -m cabinet_sim`: run the simulator without the gateway's CLI."""

from cabinet_sim.cli import main

main()
