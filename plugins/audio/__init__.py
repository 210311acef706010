"""polydiff_audio: diffusion speech enhancement and dereverberation (SGMSE+, StoRM).

Work in progress: the STFT representation, the demo corpus builder, the metrics and the
classical baseline land first; the plugin registers itself once its training and ``enhance``
commands exist.
"""
