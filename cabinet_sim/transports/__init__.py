"""Ways to reach a simulated cabinet: in-process socket pair, pseudo-terminal, TCP."""

from cabinet_sim.transports.line import CabinetLine, Shaping
from cabinet_sim.transports.memory import MemoryLink
from cabinet_sim.transports.pty import PtyTransport
from cabinet_sim.transports.tcp import TcpTransport

__all__ = ["CabinetLine", "MemoryLink", "PtyTransport", "Shaping", "TcpTransport"]
