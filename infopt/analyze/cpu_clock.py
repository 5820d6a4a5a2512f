"""The clock the CPU cores really run at, measured: the OS's figure is the base clock, and turbo runs above it.

A chain of dependent integer adds retires one add per cycle on every x86-64 core (latency 1), so the adds per
second of a long chain are the cycles per second of the core running it. The chain is a few bytes of machine
code run through ``ctypes`` from an executable ``mmap``; where that is not possible (not x86-64 Linux, or
executable memory refused) the measurement says so and callers fall back to the OS's clock.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import time

#: Dependent ``add rax, rsi`` per loop iteration (the loop's ``dec``/``jnz`` run beside the chain, off its path).
#: A register operand, not an immediate: Intel's Golden Cove cores fold ``add reg, imm`` chains at rename (an
#: immediate chain read 19 GHz on a Xeon with AMX), a register add they cannot.
ADDS_PER_ITERATION = 16
_LOOP = b"\x48\x01\xf0" * ADDS_PER_ITERATION  # add rax, rsi
# mov rcx, rdi; xor eax, eax; mov esi, 1; loop: <adds>; dec rcx; jnz loop; ret   (System V: the count in rdi)
_CODE = b"\x48\x89\xf9" + b"\x31\xc0" + b"\xbe\x01\x00\x00\x00" + _LOOP + b"\x48\xff\xc9" + b"\x75" + \
    bytes([(-(len(_LOOP) + 5)) & 0xFF]) + b"\xc3"
#: No x86-64 core runs above this: a faster reading means the chain was not one add per cycle.
MAX_PLAUSIBLE_MHZ = 8000.0


def measured_clock_mhz(iterations: int = 4_000_000, repeats: int = 5) -> tuple[float | None, str]:
    """(MHz, how it was obtained): the best of ``repeats`` timed dependent-add chains on the calling thread.

    The best run is the one least disturbed by interrupts and frequency ramp-up, so it is the core's top clock
    for one busy core (all-core turbo can be lower: a peak derived from it stays an upper bound).
    """
    if platform.machine().lower() not in ("x86_64", "amd64") or platform.system() != "Linux":
        return None, f"not measured: the dependent-add chain is x86-64 Linux code ({platform.system()} " \
                     f"{platform.machine()})"
    try:
        buffer = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError) as error:
        return None, f"not measured: executable memory refused ({error})"
    try:
        buffer.write(_CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        chain = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(address)
        if chain(10) != 10 * ADDS_PER_ITERATION:
            return None, "not measured: the dependent-add chain returned a wrong count"
        chain(iterations // 4)  # ramp the clock up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            chain(iterations)
            best = min(best, time.perf_counter() - start)
        mhz = iterations * ADDS_PER_ITERATION / best / 1e6
        if mhz > MAX_PLAUSIBLE_MHZ:
            return None, (f"not measured: the dependent-add chain ran at {mhz:.0f} MHz, above any real clock "
                          f"(this core executes the chain faster than one add per cycle)")
        return mhz, (f"measured: {iterations * ADDS_PER_ITERATION:,} dependent 1-cycle adds on one core, best of "
                     f"{repeats} runs")
    finally:
        del chain
        try:
            buffer.close()
        except BufferError:  # a ctypes view still alive: the mapping goes with the garbage collector
            pass


__all__ = ["ADDS_PER_ITERATION", "MAX_PLAUSIBLE_MHZ", "measured_clock_mhz"]
