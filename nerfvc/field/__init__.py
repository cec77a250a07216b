"""Field components (encodings, MLPs) and composed fields (head, torso) of the receiver NeRF."""
