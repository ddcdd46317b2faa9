"""Deploys and rollbacks under a steady request stream: what each strategy costs users.

Run: python -m benchmarks.deploy_load [--rate 150] [--seconds 25]; see __main__.py.
"""
