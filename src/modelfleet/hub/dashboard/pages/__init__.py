"""One module per dashboard page; each exports ``router`` (an APIRouter under ``/ui``)."""
