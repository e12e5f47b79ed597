"""CRC-16/MODBUS (poly 0x8005 reflected as 0xA001, init 0xFFFF, no final xor).

Table-driven, as in the Modbus over Serial Line specification v1.02, section 6.2.2.
The standard check value for the ASCII bytes "123456789" is 0x4B37.
"""

from __future__ import annotations

CHECK_VALUE = 0x4B37


def _build_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _build_table()


def crc16_modbus(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """Return the CRC-16/MODBUS of `data`; pass a previous result as `crc` to continue it."""
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc
