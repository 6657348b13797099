"""The hardware and firmware state, synchronous and pure: memory frames and
their owners, CPU and SIE state, the ultravisor's decision logic, the host key.

Imports only :mod:`protocol`; never awaits.
"""
