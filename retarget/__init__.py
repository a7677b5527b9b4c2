"""Pure numpy hand maths: rotations, skeleton definitions, joint limits, kinematics, rig
profiles and the MANO -> bone rotation solver. Installed as ``handmocap.retarget``.

Never imports bpy or scipy: the Blender add-on uses it inside Blender's own Python, which
ships numpy only.
"""
