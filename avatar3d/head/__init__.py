"""The rig: HeadRig, LBS, loaders (FLAME, ICT-FaceKit, synthetic), landmark embedding, registry, refined.npz."""
