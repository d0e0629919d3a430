# TST with a caffe-style teacher given as a config file, and a pytorch-style student.
_base_ = './tst_retinanet_tiny.py'
model = dict(teacher='{{fileDirname}}/retinanet_tiny_caffe.py')
