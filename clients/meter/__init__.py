"""Meter simulator (DESIGN §8): household load, signed UDP readings, resends until acked.

Modules: :mod:`.load` (pure load model), :mod:`.device` (register and datagrams),
:mod:`.outbox` (resend buffer), :mod:`.faults`, :mod:`.fleet` (the engine on the
reactor), :mod:`.commands` (stdin), :mod:`.status` (terminal output), :mod:`.cli`.
"""
