"""The pieces of benchmarks/imp_speed.py: workloads, the three runners, the subprocess worker, timing and the table.

Run the benchmark through benchmarks/imp_speed.py (its docstring explains the columns); nothing here is a command.
Every import of the `lottery` package lives in framework.py, so a move of lottery's modules is fixed there alone.
"""
