# The tiny RetinaNet with caffe-style inputs (BGR, mean subtraction only), as
# mmdet's *_caffe configs have.
_base_ = './retinanet_tiny_digits.py'
model = dict(data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0],
                                    bgr_to_rgb=False))
