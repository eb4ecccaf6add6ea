"""Where frames come from and where results go.

`sources` turns images, folders, list files, videos, webcams and streams into RGB uint8 frames
decoded ahead on a reader thread; `sinks` writes results (AlphaPose / COCO / OpenPose JSON,
rendered images, video) and can run them on a writer thread; `render` draws skeletons.
"""
