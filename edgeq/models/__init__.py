"""Models: conversion (float + quantized .tflite and a card), reading a .tflite without
TensorFlow, rewriting fp16/old-schema sources into a float32 reference, and what old
runtimes can load. Only the conversion back ends import TensorFlow, and only when used."""
