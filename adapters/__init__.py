"""Bundled robots, installed as ``embodyhub.adapters``: one folder per robot holding robot.urdf
(kinematics only), embodiment.json, LICENSE and SOURCE.md. ``build_adapters.py`` regenerates
them from the PyPI packages named in each SOURCE.md; ``embodyhub.embodiment.registry`` reads them.
"""
