"""Static files of the chat page (a package only so setuptools ships them as package data)."""
