"""Faces: the known-faces library, recognition with identities carried between frames.

``FaceRecognizer`` (recognizer.py) composes ``KnownFaces`` (known.py: photos -> cached
encodings) and ``IdentityTracker`` (identity.py: identities reused between close frames,
names smoothed); ``FaceMatch`` (match.py) is what the loop gets back. Nothing here imports
dlib, face_recognition or OpenCV before ``FaceRecognizer.load()``.
"""
from video_summarizer.faces.identity import DEFAULT_REUSE, IdentityReuse, IdentityTracker
from video_summarizer.faces.known import IMAGE_SUFFIXES, KnownFaces, SkippedImage, default_cache_dir
from video_summarizer.faces.match import UNKNOWN, FaceMatch
from video_summarizer.faces.recognizer import DEFAULT_SCALE, DEFAULT_TOLERANCE, FaceRecognizer

__all__ = ["DEFAULT_REUSE", "DEFAULT_SCALE", "DEFAULT_TOLERANCE", "IMAGE_SUFFIXES", "UNKNOWN", "FaceMatch",
           "FaceRecognizer", "IdentityReuse", "IdentityTracker", "KnownFaces", "SkippedImage",
           "default_cache_dir"]
