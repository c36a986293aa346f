"""meterd's benchmark harness (``python -m bench``).

Everything here runs the real server as a ``twistd -n meterd`` subprocess and
drives it from other processes, so what is measured is what an operator gets;
the baselines run on the same machine in the same run, so every figure can be
read as a ratio rather than as an absolute that depends on the hardware.
"""
