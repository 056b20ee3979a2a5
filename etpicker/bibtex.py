"""
@article{Liu2024,
title = {DeepETPicker: fast and accurate 3D particle picking for cryo-electron tomography using weakly supervised deep learning},
author = {Liu, Guole and Niu, Tongxin and others},
journal = {Nature Communications},
volume = {15},
pages = {2090},
year = {2024},
doi = {10.1038/s41467-024-46041-0},
url = {https://doi.org/10.1038/s41467-024-46041-0}
}
"""
