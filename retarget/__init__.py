"""Pure numpy/scipy hand maths: rotations, skeleton definitions, joint limits, kinematics,
and (later) rig profiles and MANO -> bone rotations. Installed as ``handmocap.retarget``.

Never imports bpy: the Blender add-on uses it inside Blender's own Python.
"""
