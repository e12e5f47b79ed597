from protocol.crc import CHECK_VALUE, crc16_modbus


def test_crc_standard_check_value() -> None:
    assert CHECK_VALUE == 0x4B37
    assert crc16_modbus(b"123456789") == CHECK_VALUE


def test_crc_known_modbus_request() -> None:
    # Read holding registers, slave 1, address 0, count 10: "01 03 00 00 00 0A C5 CD" on the wire.
    assert crc16_modbus(bytes.fromhex("01030000000A")) == 0xCDC5


def test_crc_continues_across_chunks() -> None:
    data = bytes(range(200))
    assert crc16_modbus(data[100:], crc16_modbus(data[:100])) == crc16_modbus(data)


def test_crc_empty_is_initial_value() -> None:
    assert crc16_modbus(b"") == 0xFFFF
