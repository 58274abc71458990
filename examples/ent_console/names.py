"""Name lists for the demo data: French names, with the letters real registers contain.

Accents, ligatures (Œ, æ), both apostrophes (' and ’), hyphenated and compound
names, and names from families who came from elsewhere (Vietnamese, Polish, Turkish,
Czech, Romanian…): the letters and the PDF must print all of them.
"""

from __future__ import annotations

FIRST_NAMES_F: tuple[str, ...] = (
    "Adèle", "Agathe", "Alice", "Amélie", "Anaïs", "Anne-Sophie", "Apolline", "Audrey",
    "Béatrice", "Bérénice", "Camille", "Capucine", "Cécile", "Célia", "Chloé", "Clémence",
    "Coralie", "Delphine", "Éléonore", "Élise", "Élodie", "Emma", "Éva", "Fanny",
    "Françoise", "Gaëlle", "Hélène", "Inès", "Irène", "Jade", "Jeanne", "Joséphine",
    "Julie", "Léa", "Léonie", "Louise", "Lucie", "Maëlle", "Manon", "Margaux",
    "Marie-Claire", "Marie-Ève", "Marion", "Mathilde", "Mélanie", "Mélissa", "Nadège",
    "Naïma", "Nathalie", "Noémie", "Océane", "Pauline", "Rose", "Salomé", "Sandrine",
    "Séverine", "Sophie", "Thérèse", "Valérie", "Véronique", "Yasmine", "Zoé", "Zoë",
    "Aïcha", "Fatoumata", "Leïla", "Maïwenn", "Rachida", "Soizic", "Awa", "Ambre",
)

FIRST_NAMES_M: tuple[str, ...] = (
    "Adrien", "Alexandre", "Antoine", "Arthur", "Aurélien", "Baptiste", "Benoît",
    "Bertrand", "Cédric", "Clément", "Damien", "Élie", "Émile", "Éric", "Étienne",
    "Fabien", "François", "Frédéric", "Gaël", "Gaëtan", "Grégoire", "Guillaume", "Hugo",
    "Jean-Baptiste", "Jean-Pierre", "Jérémie", "Jérôme", "Joël", "Jules", "Julien",
    "Léo", "Léon", "Loïc", "Louis", "Luc", "Maël", "Marc-Antoine", "Mathéo", "Mathis",
    "Maxime", "Mickaël", "Nathan", "Noël", "Noé", "Olivier", "Pierre-Louis", "Quentin",
    "Raphaël", "Rémi", "Sébastien", "Stéphane", "Théo", "Thibault", "Timothée",
    "Titouan", "Valentin", "Yanis", "Yves", "Zinédine", "Amadou", "Bilal", "Karim",
    "Mamadou", "Mehdi", "Moussa", "Nicolás", "Youssef", "Erwan", "Gwenaël", "Ianis",
)

LAST_NAMES: tuple[str, ...] = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
    "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
    "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Lefebvre",
    "Mercier", "Dupont", "Lambert", "Bonnet", "François", "Martinez", "Legrand",
    "Garnier", "Faure", "Rousseau", "Blanc", "Guérin", "Muller", "Henry", "Roussel",
    "Nicolas", "Perrin", "Morin", "Mathieu", "Clément", "Gauthier", "Dumont", "Lopez",
    "Fontaine", "Chevalier", "Robin", "Masson", "Sanchez", "Gérard", "Nguyen", "Boyer",
    "Denis", "Lemaire", "Duval", "Joly", "Gautier", "Roger", "Roche", "Roy", "Noël",
    "Meyer", "Lucas", "Meunier", "Pérez", "Marchand", "Dufour", "Blanchard", "Barbier",
    "Brun", "Dumas", "Brunet", "Schmitt", "Leroux", "Colin", "Fernandez", "Renard",
    "Arnaud", "Rolland", "Caron", "Aubert", "Giraud", "Leclerc", "Vidal", "Bourgeois",
    "Renaud", "Lemoine", "Picard", "Gaillard", "Lacroix", "Fabre", "Dupuis", "Olivier",
    "Rodriguez", "Da Silva", "Hubert", "Guillot", "Rivière", "Le Gall", "Adam", "Rey",
    "Moulin", "Gonzalez", "Berger", "Lecomte", "Ménard", "Fleury", "Deschamps",
    "Carpentier", "Maillard", "Aubry", "Vasseur", "Le Roux", "Jacquet", "Prévost",
    "Poirier", "Charpentier", "Huet", "Baron", "Dupuy", "Carré", "Breton", "Rémy",
    "Schneider", "Guyot", "Marty", "Le Goff", "Bouvier", "Texier", "Le Bihan",
    "Saint-Martin", "Besnard", "Hoarau", "Payet", "Diallo", "Traoré", "Coulibaly",
    "Benali", "Haddad", "Ben Ahmed", "Mendès", "Kowalski", "Ferreira", "Dos Santos",
    "Œillet", "Cœur", "Lecœur", "D'Alembert", "N’Diaye", "L'Hôte", "D'Almeida",
    "Lætitia-Ragot", "Gaël-Maréchal", "Chênevière", "Bénéteau", "Kerguélen",
)

#: People placed in the demo data on purpose, so that every difficult letter is
#: present at least once: (first name, last name, sex "F"/"M").
SPECIAL_PEOPLE: tuple[tuple[str, str, str], ...] = (
    ("Thị Ánh", "Nguyễn", "F"),
    ("Łukasz", "Żółć", "M"),
    ("Şükrü", "İnce", "M"),
    ("Antonín", "Dvořák", "M"),
    ("Ștefan", "Popescu", "M"),
    ("Țara", "Rădulescu", "F"),
    ("Gülşen", "Yıldız", "F"),
    ("Małgorzata", "Wiśniewska", "F"),
    ("Jiří", "Novák", "M"),
    ("Chloé", "Œillet", "F"),
    ("Bérangère", "Cœur", "F"),
    ("Jean-Rémi", "D'Alembert", "M"),
    ("Aminata", "N’Diaye", "F"),
    ("Håkon", "Ødegård", "M"),
    ("Søren", "Kierkegård", "M"),
    ("José", "Muñoz García", "M"),
    ("Jürgen", "Größmann", "M"),
    ("Đorđe", "Đoković", "M"),
    ("Ngọc Hân", "Trần", "F"),
    ("Anne-Lætitia", "Saint-Exupéry", "F"),
)

#: Children's first names for the special families (same index as SPECIAL_PEOPLE).
SPECIAL_CHILDREN: tuple[tuple[str, str], ...] = (
    ("Minh Châu", "F"),
    ("Zofia", "F"),
    ("Ayşe", "F"),
    ("Vojtěch", "M"),
    ("Ionuț", "M"),
    ("Ilinca", "F"),
    ("Çağan", "M"),
    ("Zuzanna", "F"),
    ("Kateřina", "F"),
    ("Noé", "M"),
    ("Maëlys", "F"),
    ("Gaspard", "M"),
    ("Fatou", "F"),
    ("Åsa", "F"),
    ("Mads", "M"),
    ("Íñigo", "M"),
    ("Jörg", "M"),
    ("Mila", "F"),
    ("Bảo", "M"),
    ("Anaïs", "F"),
)

STREETS: tuple[str, ...] = (
    "rue Victor Hugo", "rue Jean Jaurès", "avenue de la République", "rue Pasteur",
    "boulevard Gambetta", "impasse des Lilas", "allée des Peupliers", "rue de l'Église",
    "chemin du Moulin", "place du Marché", "rue Émile Zola", "rue des Écoles",
    "avenue du Général Leclerc", "rue de la Fontaine", "résidence Les Érables",
    "rue Jules Ferry", "quai de la Loire", "rue du Château d'Eau", "rue Saint-Éloi",
    "allée Simone Veil",
)

#: (postal code, town) around the two demo schools.
TOWNS: tuple[tuple[str, str], ...] = (
    ("37000", "Tours"),
    ("37100", "Tours"),
    ("37200", "Tours"),
    ("37300", "Joué-lès-Tours"),
    ("37540", "Saint-Cyr-sur-Loire"),
    ("37170", "Chambray-lès-Tours"),
    ("37700", "Saint-Pierre-des-Corps"),
    ("37230", "Fondettes"),
)
