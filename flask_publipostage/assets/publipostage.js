/* live preview: see publipostage.js */
